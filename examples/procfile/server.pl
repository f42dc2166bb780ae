# The Procfile example: nothing to build, the Procfile's command runs on a plain Debian
# image (perl-base is in every Debian), listening on $PORT.
use strict;
use warnings;
use IO::Socket::INET;

my $greeting = $ENV{GREETING} || "Hello";
my $server = IO::Socket::INET->new(
    LocalPort => $ENV{PORT} || 5000, Listen => 16, ReuseAddr => 1, Proto => "tcp",
) or die "cannot listen: $!";
$| = 1;
while (my $client = $server->accept) {
    while (my $line = <$client>) { last if $line eq "\r\n" || $line eq "\n"; }
    my $body = "$greeting from a Procfile (perl $^V)\n";
    print $client "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
      . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
    close $client;
}
