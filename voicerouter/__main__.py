from voicerouter.cli.app import main

main()
