package Mailglue::SpamdKeepConfig;

# mailglue (issue 17): spamd restores its whole configuration from a backup after every
# message (Mail::SpamAssassin::copy_config), in case per-user preferences changed it; that
# restore is about a third of spamd's CPU per small message. With --nouser-config and no
# SQL, LDAP or virtual-config preferences nothing changes the configuration after start-up,
# so the restore copies it onto itself. Loaded as
#
#   perl -T -I<this dir> -MMailglue::SpamdKeepConfig /usr/sbin/spamd --nouser-config ...
#
# it makes only that restore a no-op, and only when spamd's own arguments rule out per-user
# configuration; otherwise it changes nothing. Either way it says what it did on stderr.
# (spamd re-executes itself on SIGHUP without this module: it is then stock spamd again.)

use strict;
use warnings;
use Mail::SpamAssassin;

our $ACTIVE = 0;

my $nouser   = grep { $_ eq '-x' || $_ eq '--nouser-config' } @ARGV;
my @per_user = grep {
  /^--(?:user-config|sql-config|ldap-config|virtual-config-dir|setuid-with-sql|setuid-with-ldap|vpopmail)\b/
    || /^-[qQv]$/
} @ARGV;

if ($nouser && !@per_user) {
  no warnings 'redefine';
  my $copy_config = \&Mail::SpamAssassin::copy_config;
  *Mail::SpamAssassin::copy_config = sub {
    my ($self, $source, $dest) = @_;
    return 1 if defined $source && !defined $dest;    # the restore after a message
    return $copy_config->(@_);                        # the backup at start-up
  };
  $ACTIVE = 1;
  print STDERR "mailglue: spamd keeps its configuration between messages (no per-user configuration)\n";
}
else {
  print STDERR "mailglue: per-user configuration possible, spamd restores its configuration after each message\n";
}

1;
