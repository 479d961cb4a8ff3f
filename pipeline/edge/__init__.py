"""The runtime of an exported model: numpy and a TFLite interpreter only.

runtime.py    TFLiteModel (named tensors), StreamGeometry, SplitStreamingStep, Stream (the hop loop),
              stream_clip
detection.py  the continuous-detection algorithm (windows, smoothing, threshold, refractory period, re-arming)
run_folder.py an exported run folder: manifest.json -> its artifacts, a streaming step for each
The live page (web/) and the phone sketches in the README mirror these two files step by step.
"""
