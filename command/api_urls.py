from django.urls import path

from command import api

urlpatterns = [
    path("auth/token/", api.TokenView.as_view(), name="auth-token"),
    path("departments/", api.DepartmentListView.as_view(), name="department-list"),
    path("orders/", api.OrderListView.as_view(), name="order-list"),
    path("orders/<int:pk>/", api.OrderDetailView.as_view(), name="order-detail"),
    path("orders/<int:pk>/actions/", api.OrderActionView.as_view(), name="order-actions"),
    path("photos/order/<int:pk>/", api.OrderPhotoView.as_view(), name="photo-order"),
    path(
        "incidents/<int:pk>/dispatch-proposal/", api.DispatchProposalView.as_view(), name="dispatch-proposal"
    ),
    path("overdue/", api.OverdueBoardView.as_view(), name="overdue-board"),
    path("units/", api.UnitListView.as_view(), name="unit-list"),
    path("units/<int:pk>/position/", api.UnitPositionView.as_view(), name="unit-position"),
]
