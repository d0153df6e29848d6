"""A local emulator of Coder's AI Gateway keys API, answering like Coder to the status and message.

Standard library only: it runs wherever keysync runs, with nothing else to install.
"""

from keysync.devserver.config import DevServerConfig
from keysync.devserver.runner import run
from keysync.devserver.server import DevServer, DevServerError

__all__ = ["DevServer", "DevServerConfig", "DevServerError", "run"]
