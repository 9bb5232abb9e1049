"""The client's algorithmic core: local training and evaluation on in-memory features."""
