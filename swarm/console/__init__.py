"""The web console, ``swarm ui``: the night at a glance, and the operator's actions on it.

``app`` builds the Starlette application; ``auth`` says who may act;
``guard`` checks every action (login or token, CSRF, origin); ``views``
turns the ledger's records into what the pages show; ``fleet`` reads the
hosts' supervisord and the workers' metrics; ``launch`` starts the masters
and reruns an operator asks for, as processes of their own.
"""
