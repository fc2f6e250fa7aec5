"""The Azure Service Bus bridge: peek-lock messages in, Relay tasks out (and replies back)."""
