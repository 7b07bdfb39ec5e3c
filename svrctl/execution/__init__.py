"""Running a task: load, route, time out, retry, and record history and stats."""
