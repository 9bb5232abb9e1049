"""Reading a client's private data dir: labels, audio files, decoding."""
