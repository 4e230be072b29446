"""ONNX: write a task network as one verified ``.onnx`` file (:mod:`.onnx`, torch; it knows no task), and run
such a file with onnxruntime, numpy and pillow alone (:mod:`.runtime`'s ``OnnxClassifier``: importing it never
imports torch)."""
