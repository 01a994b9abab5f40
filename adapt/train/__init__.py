"""Correlation-transfer training: source warm-up -> correlation fit -> self-training rounds."""
