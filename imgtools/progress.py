"""Progress bars: tqdm's, without its monitor thread.

tqdm starts a "monitor" thread with its first bar, to redraw bars that have not updated for
ten seconds. imgtools' bars advance with every finished shard and do not need it, and a running
thread makes it unsafe to fork worker processes (a lock it holds at the fork stays held in the
child), so the local executor would have to start its workers as new interpreters, which is
slower (see :mod:`imgtools.executors.local`). Every bar imgtools draws comes from here.

Its write lock is a thread lock: tqdm's default also makes a ``multiprocessing`` lock, for
bars drawn by several processes, and so imports ``multiprocessing`` with the first bar, even a
disabled one; imgtools draws bars in the main process only (workers report to it), and a
``-j 1`` run need not load ``multiprocessing`` at all.
"""

from __future__ import annotations

import threading

from tqdm import tqdm

tqdm.monitor_interval = 0
tqdm.set_lock(threading.RLock())

__all__ = ["tqdm"]
