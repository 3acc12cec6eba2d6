"""The beamline's page: the queue, the run in progress with its live maps, the beam and the latest runs.

``braggscope serve`` runs it as its ``web`` service (``python -m braggscope.app.web``) on
``[serve] host``:``[serve] web_port``. The page opens with a key of the queue's HTTP server:
an observer's key shows everything, an operator's key also adds, pauses, resumes, stops and
aborts. The modules:

=========================  ==============================================================
``web.server``             the ASGI application: routes, the key check, the feed to every page
``web.auth``               what a key may do, asked of the queue's HTTP server
``web.queue_state``        the queue's status, queue and history (polled), the page's requests
``web.follow``             the document bus, read from now on (the run in progress replayed)
``web.feed``               documents to the page's messages: progress, live maps, curve, beam
``web.runs``               the catalog's latest runs and their figures
``web.codec``              the binary messages (a JSON header and float32 arrays)
``web/static/``            the page: ``index.html``, ``app.js``, ``style.css``
=========================  ==============================================================
"""
