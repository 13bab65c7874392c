from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from crearis.content import models


@admin.register(models.Status)
class StatusAdmin(admin.ModelAdmin):
    list_display = ["table", "name", "value", "description", "updated_at"]
    list_filter = ["table"]
    search_fields = ["name", "table", "description"]


@admin.register(models.Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "updated_at"]
    search_fields = ["name", "description"]


@admin.register(models.SystemConfig)
class SystemConfigAdmin(admin.ModelAdmin):
    list_display = ["key", "description", "updated_at"]
    search_fields = ["key", "description"]


@admin.register(models.User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["sysmail"]
    list_display = ["sysmail", "username", "role", "instructor", "is_staff", "is_active"]
    list_filter = ["role", "is_staff", "is_active"]
    search_fields = ["sysmail", "username", "extmail"]
    raw_id_fields = ["instructor"]
    fieldsets = [
        (None, {"fields": ["sysmail", "password"]}),
        ("Profile", {"fields": ["username", "extmail", "role", "instructor"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
    ]
    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["sysmail", "password1", "password2"]}),
    ]


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["domaincode", "name", "type", "is_regio", "regio", "owner", "status"]
    list_filter = ["type", "status"]
    search_fields = ["domaincode", "name"]
    raw_id_fields = ["owner", "regio"]


class XmlidAdmin(admin.ModelAdmin):
    list_display = ["xmlid", "name", "status", "updated_at"]
    list_filter = ["status"]
    search_fields = ["xmlid", "name"]
    list_select_related = ["status"]


@admin.register(models.Image)
class ImageAdmin(XmlidAdmin):
    list_display = [*XmlidAdmin.list_display, "project"]
    list_filter = ["status", "project"]
    raw_id_fields = ["project", "owner"]


@admin.register(models.Instructor)
class InstructorAdmin(XmlidAdmin):
    list_display = [*XmlidAdmin.list_display, "is_public"]
    list_filter = ["status", "is_public"]
    raw_id_fields = ["image"]


@admin.register(models.Location)
class LocationAdmin(XmlidAdmin):
    list_display = [*XmlidAdmin.list_display, "city", "country"]
    list_filter = ["status", "country"]
    search_fields = [*XmlidAdmin.search_fields, "city"]
    raw_id_fields = ["project"]


class EventInstructorInline(admin.TabularInline):
    model = models.EventInstructor
    raw_id_fields = ["instructor"]
    extra = 0


@admin.register(models.Event)
class EventAdmin(XmlidAdmin):
    list_display = [*XmlidAdmin.list_display, "project", "date_begin", "is_online"]
    list_filter = ["status", "is_online", "tags", "project"]
    date_hierarchy = "date_begin"
    raw_id_fields = ["project", "location", "public_instructor", "image"]
    filter_horizontal = ["tags"]
    inlines = [EventInstructorInline]


@admin.register(models.Post)
class PostAdmin(XmlidAdmin):
    list_display = [*XmlidAdmin.list_display, "project", "event"]
    list_filter = ["status", "tags"]
    raw_id_fields = ["project", "event"]
    filter_horizontal = ["tags"]


@admin.register(models.Participant)
class ParticipantAdmin(XmlidAdmin):
    list_display = [*XmlidAdmin.list_display, "type", "age", "city", "country"]
    list_filter = ["type", "country", "status"]
    search_fields = [*XmlidAdmin.search_fields, "city"]
    raw_id_fields = ["event"]
