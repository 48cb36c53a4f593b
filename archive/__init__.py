"""An unlabelled archive in an embedding database: build it, search it by example, label on a page, train a small
classifier by active learning, and score the whole archive without embedding it again."""
