"""Tasks: one module per task (GLUE, LM, ...), each of the same shape; base.py holds what they share."""
