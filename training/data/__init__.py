"""MIT-BIH loading, AAMI labels, beat datasets, evaluation protocols and federated partitions."""
