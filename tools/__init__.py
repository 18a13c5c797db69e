"""pulsewire command line, experiments, benchmarks and reports."""
