"""The VLA: vision encoder, instruction tokens, transformer, parallel-decoded action-token head."""
