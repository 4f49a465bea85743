"""One view that logs one record per request (a stamped one when asked, for ``flocklog verify``)."""

import logging

from django.http import HttpRequest, HttpResponse
from django.urls import path

from flocklog.stamps import Stamp, StampFilter

log = logging.getLogger("uwsgi_django")
log.addFilter(StampFilter())


def index(request: HttpRequest) -> HttpResponse:
    run, writer = request.GET.get("run"), request.GET.get("writer")
    if run and writer:
        # /?run=r1&writer=w7 logs a stamped record that 'flocklog verify' can account for.
        log.info(Stamp(run, writer, int(request.GET.get("seq", "0"))))
    else:
        log.info("GET %s", request.path)
    return HttpResponse(b"ok\n", content_type="text/plain")


urlpatterns = [path("", index)]
