from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard import views
from environments.logins import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm

handler400 = "dashboard.lib.badinput.bad_request"
handler403 = "dashboard.views.forbidden"
handler404 = "dashboard.views.not_found"
handler500 = "dashboard.views.server_error"

admin.autodiscover()  # registered here, with the URLs (dashboard/apps.py)
admin.site.login_form = ThrottledAdminAuthenticationForm
admin.site.site_header = "Retort administration"
admin.site.site_title = "Retort"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(authentication_form=ThrottledAuthenticationForm),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("", include("environments.urls")),
]
