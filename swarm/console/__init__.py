"""The web console, ``swarm ui``: the night at a glance, and the operator's actions on it.

``app`` builds the Starlette application from the page groups in ``pages``
(runs, dead letters, reruns, held runs, fleet, login), which share ``core``
(the backends a request opens, rendering); ``auth`` says who may act and
``guard`` checks every action (login or token, CSRF, origin); ``views``
turns the ledger's records into what the pages show; ``fleet`` reads the
hosts' supervisord and the workers' metrics; ``launch`` starts the masters,
reruns and publications an operator asks for, as processes of their own.
"""
