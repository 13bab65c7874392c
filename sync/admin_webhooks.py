"""The webhook deliveries and their attempts in the admin: read only (``sync.webhooks``)."""

from django.contrib import admin

from sync.admin import ReadOnlyAdmin
from sync.models import WebhookAttempt, WebhookDelivery

ATTEMPT_FIELDS = ["number", "attempted_at", "status_code", "error", "duration", "response"]


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = readonly_fields = ATTEMPT_FIELDS
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["event", "job", "url", "status", "attempt_count", "last_status_code",
                    "next_attempt_at", "created_at"]  # fmt: skip
    list_filter = ["status", "event"]
    search_fields = ["job", "url", "webhook_id", "last_error"]
    readonly_fields = ["webhook_id", "event", "job", "url", "status", "attempt_count",
                       "created_at", "last_attempt_at", "next_attempt_at", "last_status_code",
                       "last_error", "payload"]  # fmt: skip
    inlines = [WebhookAttemptInline]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ReadOnlyAdmin):
    list_display = ["delivery", "number", "attempted_at", "status_code", "error", "duration"]
    list_filter = ["status_code"]
    search_fields = ["delivery__job", "delivery__url", "delivery__webhook_id", "error"]
    list_select_related = ["delivery"]
