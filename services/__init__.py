"""The services: the orders API and the inventory, payment and notification participants."""
