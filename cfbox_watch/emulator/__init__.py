"""A local Box emulator: a real HTTP server speaking the part of Box's API that
cfbox-watch uses, so the daemon, its tests and its demo run with no Box account.

It never imports box_sdk_gen: it is the *server* the SDK talks to, and must catch
client mistakes the way Box would rather than share the client's assumptions.
"""
