package load

import "os"

func osPID() int { return os.Getpid() }
