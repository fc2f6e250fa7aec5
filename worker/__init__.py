"""arq workers that run Relay's registered tasks. ``arq worker.settings`` starts one."""

from worker import settings as settings
