"""The eight stages, one module each, each with one public run(cfg): synth | download -> prepare -> features
-> train -> evaluate -> export -> verify (see pipeline/runner.py)."""
