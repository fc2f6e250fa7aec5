"""A Service Bus client from the environment: a connection string, or a namespace and Azure AD."""

from __future__ import annotations

from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

from shared.settings import Settings


def service_bus_client(settings: Settings) -> ServiceBusClient:
    """Connection string first (also how local emulators are reached); otherwise DefaultAzureCredential
    (workload identity, managed identity, environment, Azure CLI...) against the namespace."""
    connection_string = settings.servicebus_connection_string.get_secret_value()
    if connection_string:
        return ServiceBusClient.from_connection_string(connection_string)
    from azure.identity.aio import DefaultAzureCredential  # only deployments that use AD need it loaded

    return ServiceBusClient(settings.servicebus_namespace, DefaultAzureCredential())


def task_receiver(client: ServiceBusClient, settings: Settings) -> ServiceBusReceiver:
    """A peek-lock receiver on the configured queue, or topic subscription."""
    if settings.servicebus_queue:
        return client.get_queue_receiver(settings.servicebus_queue, prefetch_count=settings.servicebus_prefetch)
    return client.get_subscription_receiver(
        settings.servicebus_topic, settings.servicebus_subscription, prefetch_count=settings.servicebus_prefetch
    )
