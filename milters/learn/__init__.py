"""`mailglue learn`: teach spamd from the LearnSpam IMAP folder (`learner`, its `config`)."""
