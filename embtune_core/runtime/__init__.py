"""What every command runs on: atomic writes, locks, interrupts, progress bars, resource errors, run folders
and stage caching, secret scrubbing, a scratch working directory for libraries that write to the current
one.
"""
