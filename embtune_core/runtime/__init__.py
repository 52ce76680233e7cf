"""What every command runs on: atomic writes, locks, interrupts, progress bars, resource errors, run folders
and stage caching, secret scrubbing.
"""
