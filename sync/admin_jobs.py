"""The Jobs page: running and recent exports and imports with live progress (the page polls
a small JSON endpoint about once a second), Cancel, and a failed job's error; and one job's
own page, where New export lands."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from sync.admin_common import render_page
from sync.admin_perms import (
    DOWNLOAD_BACKUP,
    RUN_EXPORT,
    RUN_IMPORT,
    VIEW_BACKUPS,
    VIEW_IMPORTS,
    require_permission,
)
from sync.jobs.lifecycle import JobError, JobState, find_job, recent_jobs, request_cancel
from sync.models import FINISHED, Job

# Per kind of job: the permission to see it, and the one to start or cancel it.
VIEW = {"export": VIEW_BACKUPS, "import": VIEW_IMPORTS}
RUN = {"export": RUN_EXPORT, "import": RUN_IMPORT}
RECENT = 30


def visible_kinds(request: HttpRequest) -> list[str]:
    """The kinds of job the user may see; 403 if none."""
    kinds = [kind for kind, permission in VIEW.items() if request.user.has_perm(permission)]
    if not kinds:
        require_permission(request, VIEW_BACKUPS)  # raises: names what is needed
    return kinds


def visible_job(request: HttpRequest, name: str) -> Job:
    try:
        job = find_job(name)
    except JobError as exc:
        raise Http404(str(exc)) from exc
    require_permission(request, VIEW[job.KIND])
    return job


def job_payload(job: Job, request: HttpRequest) -> dict:
    """A job's state as the pages' script reads it."""
    state = JobState.of(job)
    return state.as_dict() | {
        "progress_text": state.progress_text,
        "finished": job.status in FINISHED,
        "can_cancel": job.status not in FINISHED and request.user.has_perm(RUN[job.KIND]),
    }


def job_links(job: Job, request: HttpRequest) -> dict[str, str]:
    """Where a job's result is: its record, and an export's download."""
    links = {"record": reverse(f"admin:sync_{job._meta.model_name}_change", args=[job.pk])}
    if job.KIND == "export" and request.user.has_perm(DOWNLOAD_BACKUP):
        links["download"] = reverse("admin:sync_backuprecord_download", args=[job.pk])
    return links


def jobs(request: HttpRequest, model_admin) -> HttpResponse:
    kinds = visible_kinds(request)
    rows = [
        (job, job_payload(job, request)) for job in recent_jobs(limit=RECENT) if job.KIND in kinds
    ]
    return render_page(
        request,
        model_admin,
        "admin/sync/jobs.html",
        "Jobs",
        rows=rows,
        beat_schedules_url=beat_schedules_url(),
    )


def states(request: HttpRequest, model_admin) -> JsonResponse:
    kinds = visible_kinds(request)
    found = [job_payload(job, request) for job in recent_jobs(limit=RECENT) if job.KIND in kinds]
    return JsonResponse({"jobs": found})


def job(request: HttpRequest, model_admin, name: str) -> HttpResponse:
    found = visible_job(request, name)
    return render_page(
        request,
        model_admin,
        "admin/sync/job.html",
        found.label,
        job=found,
        state=job_payload(found, request),
        links=job_links(found, request),
    )


def state(request: HttpRequest, model_admin, name: str) -> JsonResponse:
    return JsonResponse(job_payload(visible_job(request, name), request))


@require_POST
def cancel(request: HttpRequest, model_admin, name: str) -> HttpResponse:
    found = visible_job(request, name)
    require_permission(request, RUN[found.KIND])
    try:
        request_cancel(found)
    except JobError as exc:
        model_admin.message_user(request, str(exc), messages.WARNING)
    else:
        model_admin.message_user(
            request,
            f"Asked {found.label} to stop. A running job stops at its next progress check "
            "and records itself cancelled.",
            messages.SUCCESS,
        )
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = reverse("admin:sync_jobs")
    return HttpResponseRedirect(back)


def beat_schedules_url() -> str:
    """django-celery-beat's periodic tasks in the admin, when that app is installed."""
    try:
        return reverse("admin:django_celery_beat_periodictask_changelist")
    except NoReverseMatch:
        return ""
