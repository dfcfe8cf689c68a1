"""Stopping a server the tests started as a subprocess (``landscape explore``) the way a user does: Ctrl-C."""

import signal
import subprocess


def interrupt(proc: subprocess.Popen, seconds: float = 60) -> bool:
    """Send SIGINT (Ctrl-C) to a running ``proc`` and wait ``seconds``; kill it if it is still running then.
    True if it stopped on Ctrl-C (or had already stopped)."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        return False
