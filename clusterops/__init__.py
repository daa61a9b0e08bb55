"""clusterops: keep an LLM pretraining run on a Slurm GPU cluster fed, healthy and recoverable."""

__version__ = "0.1.0"
