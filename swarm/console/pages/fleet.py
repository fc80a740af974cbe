"""The fleet: what is in force, each host's supervisord processes, each stage's pools."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from swarm.console import fleet
from swarm.console.core import Pages


class FleetPage(Pages):
    def routes(self) -> list[Route]:
        return [Route("/fleet", self.fleet_page)]

    def fleet_page(self, request: Request) -> Response:
        from swarm.fleetcontrol import describe_line, summary

        hosts = fleet.hosts(list(self.settings["supervisors"]))
        pools = fleet.pools(list(self.settings["metrics"]))
        with self.backends.ledger() as ledger:
            controls = [(job, describe_line(summary(ledger, job))) for job in ledger.jobs()]
        return self.page(request, "fleet.html", section="fleet", hosts=hosts, pools=pools,
                         controls=[c for c in controls if c[1]])
