"""The web dashboard, served by the gateway under ``/ui/`` (docs/ui.md): read models of the
fleet, a station, decisions, promotions and datasets (:mod:`flts.ui.readmodels`), the
exploratory view of a dataset (:mod:`flts.ui.explore`), the routes (:mod:`flts.ui.routes`)
and the page's own HTML, CSS and JavaScript (``static/``)."""
