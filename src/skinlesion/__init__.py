"""skinlesion: a leakage-free, calibrated skin-lesion image classifier.

Research tool, not a medical device.
"""

__version__ = "0.1.0"
