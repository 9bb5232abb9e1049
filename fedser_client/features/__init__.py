"""Feature extractors (one vector per utterance), selected by name from the run config."""

from fedser_client.features.base import FeatureExtractor, make_extractor

__all__ = ["FeatureExtractor", "make_extractor"]
