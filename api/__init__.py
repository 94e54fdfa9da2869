"""The HTTP edge of the service: app factory, routes, auth, error mapping.

Never imports ``worker``: jobs are handed over by task name (``idcard.queues``) through
a :class:`api.dispatch.Dispatcher`.
"""
