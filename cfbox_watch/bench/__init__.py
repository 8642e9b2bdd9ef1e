"""Benchmarks for cfbox-watch: `python -m cfbox_watch.bench [--full|--smoke] [--out DIR]`.

Each figure is measured next to a ceiling taken in the same run on the same machine, so
a number is read as "how close the daemon gets to what the SDK, the emulator and the
disk allow here", not as an absolute that depends on the machine. See docs/benchmarks.md.
"""
