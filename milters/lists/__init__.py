"""Mailing lists: `mailglue lists` makes Mailman 3's domains, lists, owners, moderators and
first members match the inventory, through Mailman's REST API, adding and never removing."""
