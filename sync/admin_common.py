"""What the sync app's admin pages share: rendering a page in the admin's frame, and whether
jobs run inside the web request."""

from __future__ import annotations

from contextlib import suppress

from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from sync.errors import SyncError
from sync.jobs.dispatch import broker_configured, dispatch
from sync.models import Job


def render_page(
    request: HttpRequest, model_admin, template: str, title: str, **context
) -> TemplateResponse:
    """``template`` (extending ``admin/sync/page.html``) with the admin site's context, the
    model's ``opts`` for the breadcrumbs, and ``title``."""
    return TemplateResponse(
        request,
        template,
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.model._meta,
            "title": title,
            "runs_inline": runs_inline(),
            **context,
        },
    )


def runs_inline() -> bool:
    """Whether ``dispatch`` executes a job in the calling process, here the web request: no
    Celery broker is configured (the embedded default)."""
    return not broker_configured()


def run_and_follow(job: Job) -> HttpResponseRedirect:
    """Have the queued ``job`` done (``dispatch``: here and now without a broker, else on a
    worker) and go to its page, which follows its progress."""
    with suppress(SyncError):  # an inline job that failed recorded why: its page shows it
        dispatch(job)
    return HttpResponseRedirect(reverse("admin:sync_job", args=[job.label]))
