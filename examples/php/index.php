<?php
// The PHP example: detected by index.php; PHP's built-in server serves it on $PORT.
header('Content-Type: text/plain; charset=utf-8');
echo (getenv('GREETING') ?: 'Hello'), ' from PHP ', PHP_VERSION, "\n";
