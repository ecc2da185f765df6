// Enrollio Outlook 2-way sync in one resource group: identity, monitoring, storage, Key Vault, the Flex
// Consumption function app and its alerts. Deploy with main.bicepparam (README.md, Deploy to Azure).
targetScope = 'resourceGroup'

@description('Region of every resource; must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

// At most 18 characters: with '-' and the 13-character token the app name stays within the 32 characters
// the Functions host ID is derived from.
@description('Prefix of the function app name; its hostname is <appName>-<token>.azurewebsites.net.')
@minLength(2)
@maxLength(18)
param appName string = 'enrollio-sync'

param tags object = {
  app: 'enrollio-outlook-sync'
}

@description('Application (client) id of the Entra app registration (README.md, Deploy to Azure, step 1).')
@minLength(1)
param graphClientId string

@description('Client secret of that app registration. Stored in Key Vault only.')
@secure()
param graphClientSecret string

@description('HMAC secret shared with Enrollio for signed requests and connect links. Stored in Key Vault only.')
@secure()
param enrollioSharedSecret string

@description('"kid:base64key[,kid:base64key...]" (AES-256-GCM keys for token caches; the first encrypts). Stored in Key Vault only.')
@secure()
param tokenEncryptionKeys string

@description('Sign-in authority: /common accepts work/school and personal Microsoft accounts.')
param graphAuthority string = 'https://login.microsoftonline.com/common'

param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Public https base URL when a custom domain fronts the app; empty uses the app\'s default hostname.')
param publicBaseUrl string = ''

@description('Comma-separated Enrollio URL prefixes the connect flow may redirect back to.')
param enrollioReturnUrls string

@description('Enrollio\'s events endpoint (Standard Webhooks, https); empty sends no events.')
param enrollioEventsUrl string = ''

@description('whsec_ + base64 of 24 to 64 random bytes: the events\' signing secret, shared with Enrollio. Stored in Key Vault only; required with enrollioEventsUrl.')
@secure()
param enrollioEventsSecret string = ''

@description('Seconds one call may spend retrying Graph\'s 429/503/504 (honouring Retry-After) before giving up.')
@minValue(1)
param graphRetryBudgetSeconds int = 20

@description('Largest attachment synced, in bytes (default 3 MiB, as in sync_core/settings.py).')
@minValue(1)
param attachmentCapBytes int = 3145728

@description('The tenant\'s message size limit for sending, in bytes, counted encoded (Exchange Online default 35 MiB; at most 150,000,000, Outlook\'s upload throttle per 5 minutes, as in sync_core/settings.py).')
@minValue(1)
@maxValue(150000000)
param maxMessageBytes int = 36700160

@description('Replay window of signed Enrollio requests, in seconds.')
@minValue(1)
param signatureWindowSeconds int = 300

@description('The catch-up timer\'s requests wait 0 to this many seconds each (per connection), so rounds spread over the quarter hour (docs/capacity.md; at most 900, as in sync_core/settings.py).')
@minValue(0)
@maxValue(900)
param catchupSpreadSeconds int = 900

@description('Email address that receives alerts; empty leaves them in the Azure portal only.')
param alertEmail string = ''

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_ZRS'

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, appName))

// One identity for everything the app touches (storage, Key Vault, telemetry, deployment package):
// it exists before the app, so every role assignment is in place when the host first starts.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    identityPrincipalId: identity.properties.principalId
    retentionInDays: logRetentionInDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    identityPrincipalId: identity.properties.principalId
    workspaceId: monitoring.outputs.workspaceId
    skuName: storageSkuName
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyVault'
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    identityPrincipalId: identity.properties.principalId
    workspaceId: monitoring.outputs.workspaceId
    graphClientSecret: graphClientSecret
    enrollioSharedSecret: enrollioSharedSecret
    tokenEncryptionKeys: tokenEncryptionKeys
    enrollioEventsSecret: enrollioEventsSecret
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionApp'
  params: {
    location: location
    tags: tags
    appName: appName
    resourceToken: resourceToken
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.accountName
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    workspaceId: monitoring.outputs.workspaceId
    graphClientSecretUri: keyVault.outputs.graphClientSecretUri
    enrollioSharedSecretUri: keyVault.outputs.enrollioSharedSecretUri
    tokenEncryptionKeysUri: keyVault.outputs.tokenEncryptionKeysUri
    enrollioEventsSecretUri: keyVault.outputs.enrollioEventsSecretUri
    enrollioEventsUrl: enrollioEventsUrl
    graphClientId: graphClientId
    graphAuthority: graphAuthority
    graphBaseUrl: graphBaseUrl
    publicBaseUrl: publicBaseUrl
    enrollioReturnUrls: enrollioReturnUrls
    graphRetryBudgetSeconds: graphRetryBudgetSeconds
    attachmentCapBytes: attachmentCapBytes
    maxMessageBytes: maxMessageBytes
    signatureWindowSeconds: signatureWindowSeconds
    catchupSpreadSeconds: catchupSpreadSeconds
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    appInsightsId: monitoring.outputs.appInsightsId
    alertEmail: alertEmail
  }
}

// What an operator needs next (README.md, Deploy to Azure): names and URLs only, never a secret.
output functionAppName string = functionApp.outputs.name
output healthUrl string = '${functionApp.outputs.publicBaseUrl}/api/health'
output redirectUri string = '${functionApp.outputs.publicBaseUrl}/api/outlook/callback'
output storageAccountName string = storage.outputs.accountName
output keyVaultName string = keyVault.outputs.vaultName
