"""MediaPipe's legacy human models (face, palm, pose, selfie segmentation) run with ai-edge-litert.

The ``.tflite`` files come from the ``mediapipe==0.10.21`` wheel (Apache-2.0) and live under
``<weights_dir>/mediapipe/``; :mod:`.runtime` holds the shared pre/post-processing.
"""
