"""Data: tokenizers, dataset loading and packing into training blocks."""
