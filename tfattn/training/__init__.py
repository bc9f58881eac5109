"""Training: the loop of every task (`loop`), its phases (`phases`), callbacks, metrics, strategy
and optimizer."""
