from django.contrib import admin
from django.urls import path

admin.site.site_header = "Crearis administration"
admin.site.site_title = "Crearis"

urlpatterns = [
    path("admin/", admin.site.urls),
]
