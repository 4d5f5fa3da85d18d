"""The models registry: importing this module registers every table on Base.metadata."""

from service.budgets.models import Budget, BudgetAlert, BudgetUsage
from service.charges.models import Charge, Commitment
from service.db.base import Base
from service.events.models import Event
from service.invoices.models import Invoice, InvoiceCounter
from service.meters.models import Meter, Price
from service.rollups.models import ModelRollupRow, RollupCube, RollupRow
from service.tenants.models import ApiKey, Tenant
from service.webhooks.models import WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiKey",
    "Base",
    "Budget",
    "BudgetAlert",
    "BudgetUsage",
    "Charge",
    "Commitment",
    "Event",
    "Invoice",
    "InvoiceCounter",
    "Meter",
    "ModelRollupRow",
    "Price",
    "RollupCube",
    "RollupRow",
    "Tenant",
    "WebhookDelivery",
    "WebhookEndpoint",
]
