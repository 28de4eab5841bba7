"""The status page (``GET {health}/ui``): one self-contained HTML page drawn from the health views.

``model.py`` gathers what it shows (the views' bodies, the checklist's verdict, the window history);
``render.py`` turns that into HTML; ``page.css`` is inlined (allowed by its hash), ``page.js`` is served from
``{health}/ui/page.js`` and keeps the page live by fetching ``{health}/ui`` as JSON.
"""
