"""The choices of every option, declared once: the options, the engine, the file format
and the command line read them here. A module of constants only, so that reading a
record (``faceveil inspect``) need not build the option classes."""

METHODS = ("plain", "exact-steps")  # how faces are inverted to noise
CONTEXTS = ("own", "masked")  # what is re-injected outside the mask while denoising
SPACINGS = ("leading", "trailing", "linspace")
FLIPS = ("fresh", "mixed", "signs")  # what the key does to the noise inside the mask
# how fresh faces are denoised: DPM-Solver++(2M) with the context noised forward (no
# inversion), or the DDIM chain with the context inverted (the sealed default before issue 26)
SOLVERS = ("dpm++2m", "ddim")
RECOVERY_METHODS = ("lossless", "exact-steps", "plain")
NO_FACE = ("skip", "copy", "error")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "onnx")  # which runtime runs the model
VIDEO_CODECS = ("ffv1", "h264")
DETECTOR_CHOICES = ("centerface", "hog", "cnn", "centerface+hog", "centerface+cnn", "hog+cnn",
                    "both")
