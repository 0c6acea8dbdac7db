from django.urls import path

from realtime import api

urlpatterns = [
    path("ws-tickets/", api.WsTicketView.as_view(), name="ws-ticket"),
    path("presence/", api.PresenceView.as_view(), name="presence"),
]
