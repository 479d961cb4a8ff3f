"""Speech-command recognition pipeline: synth/download -> prepare -> features -> train -> evaluate -> export -> verify."""
