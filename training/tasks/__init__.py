"""pulsewire's tasks: each one module behind ``training.tasks.base.Task``, chosen by name (``registry``)."""
