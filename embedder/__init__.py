"""The embedding engine behind predict.py: all-MiniLM-L6-v2 in plain torch."""
